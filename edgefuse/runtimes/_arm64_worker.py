"""Runs inside the emulated arm64 environment (python3.11 + aarch64 onnxruntime and numpy only):
``worker.py INPUTS.npy OUT.npz FILE...`` writes each file's logits on the inputs, one intra-op thread."""

import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    inputs = np.load(sys.argv[1])
    out = {}
    for i, path in enumerate(sys.argv[3:]):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name, batch = session.get_inputs()[0].name, session.get_inputs()[0].shape[0]
        if isinstance(batch, int):  # a fixed batch (.ort files): that many at a time
            out[str(i)] = np.concatenate([session.run(None, {name: inputs[j:j + batch]})[0]
                                          for j in range(0, len(inputs), batch)])
        else:
            out[str(i)] = session.run(None, {name: inputs})[0]
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
