"""A traced module's weights written straight into an ONNX graph's external data, one at a time.

torch's TorchScript exporter serialises every weight into the protobuf it builds, copies that
into Python bytes and writes it out; reading the file back to move the weights beside the
graph (what onnxruntime wants: see `export._export`) parses them once more. For ViT-B-32's
image tower (350 MB of weights) that held 1.4 GB above the model itself. Traced without its
parameters (`export_params=False`, `keep_initializers_as_inputs=True`) the graph names each
weight as an input; `attach_weights` writes each one from the module into the data file and
turns the input into an initializer that points there, so an export holds the model and one
tensor at a time.

The tracer's constant folding needs the weights inside the graph, so it is off; the one fold
a query's session start would otherwise pay for on every cold query, a weight's Transpose in
front of a MatMul (each Linear applied to a 3-D input), is done here as the weight is written.
onnxruntime folds the rest (small shape arithmetic) when it opens the graph.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import BinaryIO

import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from indexer.atomic import replacing

_INLINE_BYTES = 1024  # smaller tensors stay inside the graph, as onnx's own writer keeps them


def attach_weights(
    model: onnx.ModelProto, module: torch.nn.Module, data: Path, inputs: list[str]
) -> None:
    """Write the weights `model` takes as inputs besides `inputs`, from `module` (whose
    state-dict names the exporter gave them), into the file `data` beside the graph, and make
    them initializers."""
    tensors = dict(module.state_dict(keep_vars=True))
    graph = model.graph
    unknown = [v.name for v in graph.input if v.name not in tensors and v.name not in inputs]
    if unknown:  # the exporter named a weight other than by the module's state dict
        raise RuntimeError(f"the traced graph takes inputs no weight is named: {unknown[:3]}")
    weights = [value.name for value in graph.input if value.name in tensors]
    users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in set(node.input):
            users[name].append(node)
    # A weight read inside a subgraph (If, Loop) has readers `users` does not see: no folds.
    nested = any(a.type in (a.GRAPH, a.GRAPHS) for node in graph.node for a in node.attribute)
    folded: list[onnx.NodeProto] = []
    with replacing(data) as tmp, tmp.open("wb") as out:
        for name in weights:
            tensor, stored_as = tensors[name].detach(), name
            transpose = None if nested else _sole_transpose(users[name])
            if transpose is not None:
                perm = [list(a.ints) for a in transpose.attribute if a.name == "perm"]
                tensor = tensor.permute(*(perm[0] if perm else reversed(range(tensor.dim()))))
                stored_as = transpose.output[0]
                folded.append(transpose)
            graph.initializer.append(_initializer(stored_as, tensor, out, data.name))
    for node in folded:
        graph.node.remove(node)
    kept = [value for value in graph.input if value.name not in tensors]
    del graph.input[:]
    graph.input.extend(kept)


def _sole_transpose(users: list[onnx.NodeProto]) -> onnx.NodeProto | None:
    """The Transpose node that is a weight's only reader, if it has one."""
    if len(users) == 1 and users[0].op_type == "Transpose":
        return users[0]
    return None


def _initializer(name: str, tensor: torch.Tensor, out: BinaryIO, location: str) -> TensorProto:
    """`tensor` as an initializer: inline when small, else appended to `out` (the file named
    `location`) and pointed at there."""
    array = tensor.contiguous().numpy()  # a copy only for a transposed weight
    if array.nbytes < _INLINE_BYTES:
        return numpy_helper.from_array(array, name)
    proto = TensorProto(
        name=name, dims=array.shape, data_type=helper.np_dtype_to_tensor_dtype(array.dtype)
    )
    offset = out.tell()
    out.write(array.data)
    proto.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", array.nbytes)):
        entry = proto.external_data.add()
        entry.key, entry.value = key, str(value)
    return proto
