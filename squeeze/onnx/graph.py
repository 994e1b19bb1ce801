"""A small ONNX graph builder for the self-regenerating graph: short value names, deduplicated
constants and model-local functions (each written once, called many times), so that the
regeneration costs a few kilobytes of graph whatever the model's size.

    g = Builder()
    y = g.op("Add", x, g.const(np.uint32(7)))
    a, b = g.op("Split", y, axis=0, num_outputs=2)
    z = g.call(RADIX4, y, axis=-1)           # a model-local function, defined once
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

DOMAIN = "sq"  # the domain of the model-local functions (short: every call names it)
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def short_name(i: int) -> str:
    """The i-th short value name: ``0``, ``1``, ..., ``z``, ``10``, ... (base 36)."""
    out = ""
    while True:
        i, r = divmod(i, len(_DIGITS))
        out = _DIGITS[r] + out
        if i == 0:
            return out


@dataclass(frozen=True)
class Function:
    """A model-local ONNX function: its name, formal inputs and outputs, a body writer that
    adds the body's nodes to a :class:`Builder` given the formal input names, and the names of
    its attributes (a body node takes one as :class:`Ref`)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    body: Callable[["Builder", list[str]], list[str]]
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ref:
    """A body node's attribute that takes the value of the calling node's attribute ``name``."""

    name: str
    kind: int = onnx.AttributeProto.INT


class Builder:
    """Collects nodes, initializers and functions; every value gets a fresh short name."""

    def __init__(self, opset: int = 18, names: Iterator[str] | None = None):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.functions: dict[str, onnx.FunctionProto] = {}
        self._consts: dict[tuple, str] = {}
        self._names = map(short_name, itertools.count()) if names is None else names
        self._taken: set[str] = set()  # chosen names (stored tensors) that fresh names skip

    def fresh(self) -> str:
        """A new unused value name."""
        name = next(self._names)
        while name in self._taken:
            name = next(self._names)
        return name

    def const(self, value, dtype=None) -> str:
        """An initializer holding ``value`` (a numpy array or scalar); equal constants share one."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.fresh()
            self.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def tensor(self, name: str, value: np.ndarray) -> str:
        """An initializer with a chosen name (stored data such as theta_d)."""
        self._taken.add(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, domain: str = "", **attrs):
        """Add one node; returns its output name (or a list of names when ``outputs > 1``)."""
        outs = [self.fresh() for _ in range(outputs)]
        refs = {k: v for k, v in attrs.items() if isinstance(v, Ref)}
        node = helper.make_node(op_type, list(inputs), outs, domain=domain, **{k: v for k, v in attrs.items() if k not in refs})
        node.attribute.extend(helper.make_attribute_ref(k, v.kind, ref_attr_name=v.name) for k, v in refs.items())
        self.nodes.append(node)
        return outs[0] if outputs == 1 else outs

    def call(self, fn: Function, *inputs: str, **attrs):
        """Call a model-local function (defining it on first use) with its attributes."""
        if fn.name not in self.functions:
            self.functions[fn.name] = _function_proto(fn, self.opset, self.functions)
        return self.op(fn.name, *inputs, outputs=len(fn.outputs), domain=DOMAIN, **attrs)


def _function_proto(fn: Function, opset: int, registry: dict) -> onnx.FunctionProto:
    body = Builder(opset, names=map(str, itertools.count()))
    body.functions = registry  # functions called from this body are defined before it
    outs = fn.body(body, list(fn.inputs))
    assert not body.initializers, "function bodies use Constant nodes, not initializers"
    renamed = {o: f for o, f in zip(outs, fn.outputs)}
    nodes = []
    for n in body.nodes:
        n.output[:] = [renamed.get(o, o) for o in n.output]
        n.input[:] = [renamed.get(i, i) for i in n.input]
        nodes.append(n)
    return helper.make_function(DOMAIN, fn.name, list(fn.inputs), list(fn.outputs), nodes, [helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)], attributes=list(fn.attributes))


__all__ = ["Builder", "DOMAIN", "Function", "short_name"]
