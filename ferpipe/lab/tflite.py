"""Build an ONNX graph from a TFLite model, without TensorFlow.

Covers the operators of MediaPipe's face models (the Face Landmarker bundle): convolutions
(regular and depthwise), PReLU, max-pooling, padding, element-wise arithmetic, reductions,
reshape, transpose, strided slices, concatenation and float16 weights (DEQUANTIZE). Tensors
are carried in ONNX's NCHW layout through convolutions, pooling, PReLU, padding and element-wise
arithmetic, and turned back to TFLite's NHWC (one transpose) only before an operator that depends
on the layout otherwise (reshape, reductions, slices, concatenation, transpose) and at the outputs.

With ``dynamic_batch`` the leading dimension of the input, outputs and reshapes becomes
symbolic, so one session scores many faces in one call.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_ACT = {0: None, 1: "Relu", 3: "Relu6"}


def _tflite():
    try:
        import tflite
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError("converting TFLite models needs the 'tflite' package (pip install tflite)") from None
    return tflite


def _op_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}


class _Graph:
    """Collects ONNX nodes and initializers while walking a TFLite subgraph."""

    def __init__(self, model, sub, dynamic_batch: bool) -> None:
        self.model, self.sub, self.dynamic = model, sub, dynamic_batch
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {}
        self.consts: dict[int, np.ndarray] = {}
        self.counter = 0
        self.nchw: dict[int, str] = {}  # 4-D activations held in NCHW: tensor -> ONNX name of that form

    def name(self, t: int) -> str:
        return f"t{t}"

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}_{self.counter}"

    def tensor_array(self, t: int) -> np.ndarray | None:
        """The constant value of tensor t (float16 widened to float32), or None for an activation."""
        if t in self.consts:
            return self.consts[t]
        tensor = self.sub.Tensors(t)
        data = self.model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:
            return None
        dtype = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64, 9: np.int8, 3: np.uint8}[tensor.Type()]
        shape = tensor.ShapeAsNumpy() if tensor.ShapeLength() else ()
        arr = np.frombuffer(data.tobytes(), dtype=dtype).reshape(shape)
        return arr.astype(np.float32) if dtype == np.float16 else arr

    def value(self, t: int) -> str:
        """The ONNX name of tensor t in TFLite's own layout (NHWC), adding constants as initializers."""
        arr = self.tensor_array(t)
        name = self.name(t)
        if arr is not None and name not in self.inits:
            self.inits[name] = arr
        if t in self.nchw and not self._has(name):
            self.node("Transpose", [self.nchw[t]], [name], perm=[0, 2, 3, 1])
        return name

    def _has(self, name: str) -> bool:
        return name in self.inits or any(name in n.output for n in self.nodes)

    def nchw_value(self, t: int) -> str:
        """The ONNX name of 4-D activation t in NCHW (a transpose is added once where it is NHWC)."""
        if t not in self.nchw:
            name = self.fresh("nchw")
            self.node("Transpose", [self.value(t)], [name], perm=[0, 3, 1, 2])
            self.nchw[t] = name
        return self.nchw[t]

    def is_4d(self, t: int) -> bool:
        return self.sub.Tensors(t).ShapeLength() == 4 and self.tensor_array(t) is None

    def operand(self, t: int, nchw: bool) -> str:
        """Tensor t for an element-wise op whose other operand is in NCHW when ``nchw``: activations are
        transposed, constants (per-channel or scalar) reshaped to broadcast over NCHW."""
        if not nchw:
            return self.value(t)
        arr = self.tensor_array(t)
        if arr is None:
            return self.nchw_value(t) if self.is_4d(t) else self.value(t)
        if arr.size == 1:
            return self.const(arr.reshape(()).astype(arr.dtype), "scalar")
        if arr.ndim >= 1 and arr.size == arr.shape[-1]:  # per channel, e.g. (C,), (1, 1, C), (1, 1, 1, C)
            return self.const(arr.reshape(-1, 1, 1), "perchan")
        return self.const(arr.transpose(0, 3, 1, 2) if arr.ndim == 4 else arr, "const4d")

    def const(self, arr: np.ndarray, base: str) -> str:
        name = self.fresh(base)
        self.inits[name] = np.asarray(arr)
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    def activation(self, src: str, out: str, fused: int) -> None:
        act = _ACT.get(fused, "unsupported")
        if act == "unsupported":
            raise ValueError(f"unsupported fused activation {fused}")
        if act is None:
            self.node("Identity", [src], [out])
        elif act == "Relu6":
            self.node("Clip", [src, self.const(np.float32(0), "zero"), self.const(np.float32(6), "six")], [out])
        else:
            self.node(act, [src], [out])

    def batch_shape(self, shape: np.ndarray) -> np.ndarray:
        shape = np.asarray(shape, dtype=np.int64).copy()
        if self.dynamic and shape.size and shape[0] == 1:
            shape[0] = -1
        return shape


def _conv(g: _Graph, op, opts_cls, ins: list[int], out: str, depthwise: bool) -> None:
    """A convolution in NCHW; ``out`` names its NCHW result."""
    opts = opts_cls()
    opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
    w = g.tensor_array(ins[1])
    if depthwise:  # TFLite [1, kh, kw, C*m] -> ONNX [C*m, 1, kh, kw], one group per input channel
        weight = w.transpose(3, 0, 1, 2)
        group = weight.shape[0] // opts.DepthMultiplier()
    else:  # TFLite [O, kh, kw, I] -> ONNX [O, I, kh, kw]
        weight, group = w.transpose(0, 3, 1, 2), 1
    args = [g.nchw_value(ins[0]), g.const(weight.astype(np.float32), "w")]
    if len(ins) > 2 and ins[2] >= 0:
        args.append(g.const(g.tensor_array(ins[2]).astype(np.float32), "b"))
    y = g.fresh("conv")
    pad = "SAME_UPPER" if opts.Padding() == 0 else "VALID"
    g.node("Conv", args, [y], strides=[opts.StrideH(), opts.StrideW()], auto_pad=pad, group=group,
           dilations=[opts.DilationHFactor(), opts.DilationWFactor()], kernel_shape=list(weight.shape[2:]))  # fmt: skip
    g.activation(y, out, opts.FusedActivationFunction())


def convert_tflite(source: str | os.PathLike | bytes, onnx_path: str | os.PathLike, dynamic_batch: bool = True,
                   opset: int = 18) -> Path:  # fmt: skip
    """Write the ONNX equivalent of a TFLite model (a file path or its bytes); ValueError for an unsupported op."""
    tflite = _tflite()
    buf = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    sub = model.Subgraphs(0)
    names = _op_names()
    g = _Graph(model, sub, dynamic_batch)
    from tflite.AddOptions import AddOptions
    from tflite.ConcatenationOptions import ConcatenationOptions
    from tflite.Conv2DOptions import Conv2DOptions
    from tflite.DepthwiseConv2DOptions import DepthwiseConv2DOptions
    from tflite.DivOptions import DivOptions
    from tflite.MulOptions import MulOptions
    from tflite.Pool2DOptions import Pool2DOptions
    from tflite.ReducerOptions import ReducerOptions
    from tflite.StridedSliceOptions import StridedSliceOptions
    from tflite.SubOptions import SubOptions

    def options(op, cls):
        o = cls()
        o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        return o

    binary = {"ADD": ("Add", AddOptions), "SUB": ("Sub", SubOptions), "MUL": ("Mul", MulOptions),
              "DIV": ("Div", DivOptions)}  # fmt: skip
    unary = {"LOGISTIC": "Sigmoid", "SQRT": "Sqrt", "NEG": "Neg", "RELU": "Relu", "TANH": "Tanh"}
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        ins = [int(x) for x in op.InputsAsNumpy()]
        outs = [int(x) for x in op.OutputsAsNumpy()]
        out = g.name(outs[0])
        if kind == "DEQUANTIZE":
            arr = g.tensor_array(ins[0])
            if arr is None:
                raise ValueError("DEQUANTIZE of an activation is not supported")
            g.consts[outs[0]] = arr.astype(np.float32)
        elif kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            y = g.fresh("nchw")
            _conv(g, op, Conv2DOptions if kind == "CONV_2D" else DepthwiseConv2DOptions, ins, y, kind != "CONV_2D")
            g.nchw[outs[0]] = y
        elif kind == "MAX_POOL_2D":
            o = options(op, Pool2DOptions)
            y, z = g.fresh("pool"), g.fresh("nchw")
            g.node("MaxPool", [g.nchw_value(ins[0])], [y], kernel_shape=[o.FilterHeight(), o.FilterWidth()],
                   strides=[o.StrideH(), o.StrideW()], auto_pad="SAME_UPPER" if o.Padding() == 0 else "VALID")  # fmt: skip
            g.activation(y, z, o.FusedActivationFunction())
            g.nchw[outs[0]] = z
        elif kind == "PRELU" and ins[0] in g.nchw:
            z = g.fresh("nchw")
            g.node("PRelu", [g.nchw[ins[0]], g.operand(ins[1], True)], [z])
            g.nchw[outs[0]] = z
        elif kind == "PRELU":
            g.node("PRelu", [g.value(ins[0]), g.value(ins[1])], [out])
        elif kind in binary:
            onnx_op, cls = binary[kind]
            in_nchw = any(t in g.nchw for t in ins[:2])
            y, z = g.fresh(kind.lower()), g.fresh("nchw") if in_nchw else out
            g.node(onnx_op, [g.operand(ins[0], in_nchw), g.operand(ins[1], in_nchw)], [y])
            g.activation(y, z, options(op, cls).FusedActivationFunction())
            if in_nchw:
                g.nchw[outs[0]] = z
        elif kind in unary:
            if ins[0] in g.nchw:
                z = g.fresh("nchw")
                g.node(unary[kind], [g.nchw[ins[0]]], [z])
                g.nchw[outs[0]] = z
            else:
                g.node(unary[kind], [g.value(ins[0])], [out])
        elif kind == "RSQRT":
            y = g.fresh("sqrt")
            g.node("Sqrt", [g.value(ins[0])], [y])
            g.node("Reciprocal", [y], [out])
        elif kind == "SQUARED_DIFFERENCE":
            d = g.fresh("diff")
            g.node("Sub", [g.value(ins[0]), g.value(ins[1])], [d])
            g.node("Mul", [d, d], [out])
        elif kind in ("MEAN", "SUM"):
            axes = g.tensor_array(ins[1]).astype(np.int64).reshape(-1)
            keep = options(op, ReducerOptions).KeepDims()
            g.node("ReduceMean" if kind == "MEAN" else "ReduceSum", [g.value(ins[0]), g.const(axes, "axes")], [out],
                   keepdims=int(keep))  # fmt: skip
        elif kind == "PAD" and ins[0] in g.nchw:
            pads = g.tensor_array(ins[1]).astype(np.int64)[[0, 3, 1, 2]]  # NHWC rows -> NCHW order
            z = g.fresh("nchw")
            g.node("Pad", [g.nchw[ins[0]], g.const(np.concatenate([pads[:, 0], pads[:, 1]]), "pads")], [z])
            g.nchw[outs[0]] = z
        elif kind == "PAD":
            pads = g.tensor_array(ins[1]).astype(np.int64)
            g.node("Pad", [g.value(ins[0]), g.const(np.concatenate([pads[:, 0], pads[:, 1]]), "pads")], [out])
        elif kind == "RESHAPE":
            shape = g.tensor_array(ins[1]) if len(ins) > 1 and ins[1] >= 0 else sub.Tensors(outs[0]).ShapeAsNumpy()
            g.node("Reshape", [g.value(ins[0]), g.const(g.batch_shape(shape), "shape")], [out])
        elif kind == "TRANSPOSE":
            g.node("Transpose", [g.value(ins[0])], [out], perm=[int(p) for p in g.tensor_array(ins[1])])
        elif kind == "CONCATENATION":
            o = options(op, ConcatenationOptions)
            y = g.fresh("concat")
            g.node("Concat", [g.value(t) for t in ins], [y], axis=o.Axis())
            g.activation(y, out, o.FusedActivationFunction())
        elif kind == "STRIDED_SLICE":
            o = options(op, StridedSliceOptions)
            if o.EllipsisMask() or o.NewAxisMask():
                raise ValueError("STRIDED_SLICE with ellipsis or new axes is not supported")
            begin, end, step = (g.tensor_array(t).astype(np.int64) for t in ins[1:4])
            big = np.iinfo(np.int64).max
            begin = np.where([(o.BeginMask() >> k) & 1 for k in range(len(begin))], 0, begin)
            end = np.where([(o.EndMask() >> k) & 1 for k in range(len(end))], big, end)
            shrink = [k for k in range(len(begin)) if (o.ShrinkAxisMask() >> k) & 1]
            for k in shrink:
                end[k] = begin[k] + 1 if begin[k] != -1 else big
            y = g.fresh("slice") if shrink else out
            g.node("Slice", [g.value(ins[0]), g.const(begin, "begin"), g.const(end, "end"),
                             g.const(np.arange(len(begin), dtype=np.int64), "axes"), g.const(step, "steps")], [y])  # fmt: skip
            if shrink:
                g.node("Squeeze", [y, g.const(np.array(shrink, np.int64), "sq")], [out])
        else:
            raise ValueError(f"unsupported TFLite operator {kind}")

    def info(t: int):
        shape = [int(d) for d in sub.Tensors(t).ShapeAsNumpy()]
        if dynamic_batch and shape and shape[0] == 1:
            shape[0] = "N"
        return helper.make_tensor_value_info(g.name(t), TensorProto.FLOAT, shape)

    inputs = [info(sub.Inputs(k)) for k in range(sub.InputsLength())]
    for k in range(sub.OutputsLength()):  # outputs in TFLite's layout
        g.value(sub.Outputs(k))
    outputs = [info(sub.Outputs(k)) for k in range(sub.OutputsLength())]
    inits = [numpy_helper.from_array(a, n) for n, a in g.inits.items()]
    graph = helper.make_graph(g.nodes, "tflite", inputs, outputs, inits)
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="ferpipe.tflite"
    )
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    path = Path(onnx_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, str(path))
    return path
