"""Generated from grpc_service.proto (see the command in it); do not edit the _pb2 modules."""
