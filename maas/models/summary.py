"""model.summary(): Keras 3's table."""
from __future__ import annotations

from ..layers.base import InputLayer


def _shape_str(shape):
    if shape is None:
        return "?"
    if isinstance(shape, list) and shape and isinstance(shape[0], (tuple, list)):
        return "[" + ", ".join(_shape_str(s) for s in shape) + "]"
    shape = tuple(shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


def readable_memory_size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024


def _wrap(text, width):
    lines = []
    for part in str(text).split("\n"):
        while len(part) > width:
            lines.append(part[:width])
            part = part[width:]
        lines.append(part)
    return lines


def print_summary(model, line_length=None, positions=None, print_fn=None, show_trainable=False):
    print_fn = print_fn or print
    functional = getattr(model, "_is_graph_network", False) and type(model).__name__ != "Sequential"
    sequential = type(model).__name__ == "Sequential" or not functional
    if sequential:
        line_length = line_length or 84
        positions = positions or [0.45, 0.84, 1.0]
        headers = ["Layer (type)", "Output Shape", "Param #"]
    else:
        line_length = line_length or 108
        positions = positions or [0.3, 0.6, 0.7, 1.0]
        headers = ["Layer (type)", "Output Shape", "Param #", "Connected to"]
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    widths = [positions[0]] + [positions[i] - positions[i - 1] for i in range(1, len(positions))]
    widths = [w - 3 for w in widths]
    aligns = ["<", "<", ">", "<"]

    layers = model.layers
    if not layers and not model.built:
        raise ValueError("This model has not yet been built. Build the model first by calling "
                         "`build()` or by calling the model on a batch of data.")
    rows = []
    node_ids = {id(n) for n in getattr(model, "_nodes", [])}
    for layer in layers:
        if sequential and isinstance(layer, InputLayer):
            continue
        shape = layer._output_shape
        cells = [f"{layer.name} ({type(layer).__name__})", _shape_str(shape),
                 f"{layer.count_params():,}"]
        if not sequential:
            conn = []
            for node in layer._inbound_nodes:
                if id(node) not in node_ids:
                    continue
                for t in node.input_tensors:
                    src, ni, ti = t._keras_history
                    conn.append(f"{src.name}[{ni}][{ti}]")
            cells.append("\n".join(conn) if conn else "-")
        rows.append(cells)

    def line(left, mid, right, fill):
        return left + mid.join(fill * (w + 2) for w in widths) + right

    def fmt_row(cells, sep):
        wrapped = [_wrap(c, w) for c, w in zip(cells, widths)]
        height = max(len(w) for w in wrapped)
        out = []
        for i in range(height):
            parts = [f" {(wr[i] if i < len(wr) else ''):{a}{w}} " for wr, w, a in zip(wrapped, widths, aligns)]
            out.append(sep + sep.join(parts) + sep)
        return out

    print_fn(f'Model: "{model.name}"')
    print_fn(line("┏", "┳", "┓", "━"))
    for l in fmt_row(headers, "┃"):
        print_fn(l)
    print_fn(line("┡", "╇", "┩", "━"))
    for i, r in enumerate(rows):
        for l in fmt_row(r, "│"):
            print_fn(l)
        if i < len(rows) - 1:
            print_fn(line("├", "┼", "┤", "─"))
    print_fn(line("└", "┴", "┘", "─"))
    total = model.count_params()
    trainable = int(sum(w.size for w in model.trainable_weights))
    print_fn(f" Total params: {total:,} ({readable_memory_size(total * 4)})")
    print_fn(f" Trainable params: {trainable:,} ({readable_memory_size(trainable * 4)})")
    print_fn(f" Non-trainable params: {total - trainable:,} ({readable_memory_size((total - trainable) * 4)})")
    if getattr(model, "optimizer", None) is not None and model.optimizer.variables:
        n = int(sum(v.size for v in model.optimizer.variables))
        print_fn(f" Optimizer params: {n:,} ({readable_memory_size(n * 4)})")
