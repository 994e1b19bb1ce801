"""The model's own graph with its weights fed by the regeneration subgraph.

The module is exported by the same torch.export-based exporter as the full export, but with
its parameters and stored buffers passed as graph inputs: the exporter's optimizer cannot
fold them into new constants (transposed, fused or sliced copies), so each weight enters the
graph exactly once, under its own name. Those inputs then become internal values: the
parameters are reshaped slices of the regenerated theta, the buffers initializers holding the
stored values. Names are shortened and the exporter's per-node metadata dropped, so the
model's graph costs about as much as its operators.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper
from torch import nn
from torch.func import functional_call

from squeeze.onnx.graph import DOMAIN, Builder
from squeeze.onnx.inputs import InputSpec

INPUT = "input"


class _Bound(nn.Module):
    """The module with its parameters and buffers as arguments after the input."""

    def __init__(self, model: nn.Module, spec: InputSpec, names: list[str]):
        super().__init__()
        self.model, self.spec, self.names = model, spec, names

    def forward(self, x: torch.Tensor, tensors: list[torch.Tensor]):
        return functional_call(self.model, dict(zip(self.names, tensors)), (self.spec.apply(x),))


def export_bound(model: nn.Module, spec: InputSpec, example: torch.Tensor, names: list[str], output_names: list[str], opset: int, what: str) -> onnx.ModelProto:
    """The exporter's graph of ``model`` with ``names`` (parameters and buffers) as inputs.

    Raises:
        ExportError: the exporter fails (the same message as the full export's).
    """
    import onnx_ir as ir

    from squeeze.onnx.exporter import ExportError, exporter_reason, plain_attention, quiet

    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    args = (example, [state[n].detach() for n in names])
    dynamic = ({0: torch.export.Dim("batch")}, [None] * len(names))
    try:
        with quiet(), plain_attention():
            program = torch.onnx.export(
                _Bound(model, spec, names), args, dynamo=True, opset_version=opset, input_names=[INPUT, *names],
                output_names=output_names, dynamic_shapes=dynamic, external_data=False, verbose=False, report=False,
            )
    except Exception as e:
        raise ExportError(exporter_reason(e, what)) from e
    return ir.to_proto(program.model)


def splice(model: onnx.ModelProto, g: Builder, theta: str, shapes: dict[str, tuple[int, ...]], buffers: dict[str, np.ndarray], metadata: dict[str, str]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Feed ``model``'s parameter inputs from ``theta`` and its buffer inputs from initializers.

    Args:
        model: from :func:`export_bound`.
        g: the builder holding the regeneration subgraph (its nodes come first).
        theta: the name of the flat weights (D,) in manifest order.
        shapes: the manifest, name -> shape, in manifest order.
        buffers: stored buffers by name, as stored.
        metadata: model-level metadata to keep.

    Returns:
        The self-regenerating model (one graph, all names short) and the renaming of the
        builder's values (old name -> name in the model).
    """
    graph = model.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes.values()]
    pieces = g.op("Split", theta, g.const(np.array(sizes, np.int64)), axis=0, outputs=len(sizes)) if len(sizes) > 1 else [theta]
    for (name, shape), piece in zip(shapes.items(), pieces):
        if name in used:
            if len(shape) == 1:  # already (n,): the piece is the parameter
                _rename_uses(graph, name, piece)
            else:
                g.nodes.append(helper.make_node("Reshape", [piece, g.const(np.array(shape, np.int64))], [name]))
    for name, value in buffers.items():
        if name in used:
            g.tensor(name, value)
    keep = [i for i in graph.input if i.name == INPUT]
    nodes = list(g.nodes) + list(graph.node)
    inits = list(g.initializers) + list(graph.initializer)
    out = helper.make_graph(nodes, "squeeze", keep, list(graph.output), inits)
    _name_batch(out)
    rename = _compact(out, g)
    opsets = [o for o in model.opset_import if o.domain in ("", DOMAIN)] + ([helper.make_opsetid(DOMAIN, 1)] if g.functions else [])
    result = helper.make_model(out, opset_imports=opsets, functions=list(g.functions.values()), ir_version=model.ir_version)
    for k, v in metadata.items():
        result.metadata_props.add(key=k, value=v)
    return result, rename


def _name_batch(graph: onnx.GraphProto, name: str = "batch") -> None:
    """Call the input's dynamic first dimension ``name`` wherever it appears (the exporter calls
    it by its symbol, such as ``s77``), as the full export does."""
    if not graph.input or not graph.input[0].type.tensor_type.shape.dim:
        return
    symbol = graph.input[0].type.tensor_type.shape.dim[0].dim_param
    if not symbol or symbol == name:
        return
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = name


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for n in graph.node:
        n.input[:] = [new if i == old else i for i in n.input]
    for o in graph.output:
        if o.name == old:
            raise AssertionError("a parameter is a graph output")


# Attributes whose value is the operator's documented behaviour when absent (no schema default).
_IMPLIED = {"dilations": 1, "strides": 1, "pads": 0}
_WINDOWED = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}


def _drop_default_attributes(node: onnx.NodeProto, opset: int) -> None:
    """Remove attributes equal to the value the operator takes when they are absent."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return
    keep = []
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        spec = schema.attributes.get(a.name)
        default = spec.default_value if spec is not None else None
        if default is not None and default.type != 0 and helper.get_attribute_value(default) == value:
            continue
        if node.op_type in _WINDOWED and a.name in _IMPLIED and isinstance(value, list) and all(v == _IMPLIED[a.name] for v in value):
            continue
        keep.append(a)
    del node.attribute[:]
    node.attribute.extend(keep)


def _compact(graph: onnx.GraphProto, g: Builder) -> dict[str, str]:
    """Short names for every internal value, no node names, docs, metadata or value_info."""
    fixed = {i.name for i in graph.input} | {o.name for o in graph.output}
    rename: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in fixed:
            return name
        if name not in rename:
            rename[name] = g.fresh()
        return rename[name]

    for t in graph.initializer:
        t.name = short(t.name)
        t.ClearField("doc_string")
        del t.metadata_props[:]
    for n in graph.node:
        n.input[:] = [short(i) for i in n.input]
        n.output[:] = [short(o) for o in n.output]
        n.ClearField("name")
        n.ClearField("doc_string")
        del n.metadata_props[:]
        _drop_default_attributes(n, g.opset)
        for a in n.attribute:
            if a.g.node or a.graphs:
                from squeeze.onnx.exporter import ExportError

                raise ExportError(f"the model's graph holds a {n.op_type} with a subgraph, which a tiny graph does not support; use the full export")
    del graph.value_info[:]
    for v in (*graph.input, *graph.output):
        v.ClearField("doc_string")
        del v.metadata_props[:]
    return rename


__all__ = ["INPUT", "export_bound", "splice"]
