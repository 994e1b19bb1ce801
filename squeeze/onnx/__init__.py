"""The self-regenerating ONNX graph (``squeeze export --tiny``): theta_d as stored, and the
regeneration theta = theta_0 + P @ theta_d as standard ONNX ops that a runtime folds once at
session start, bit-identical to the torch path.

  graph.py        a small graph builder (short names, shared constants, local functions)
  threefry.py     Threefry-2x32-20 and the uniform and sign draws built on it
  projections.py  P @ theta_d for sorf, dense and sparse
  theta.py        theta_0 per manifest entry, the projection placed, layerwise scales
  stored.py       theta_d as stored (float16/float32, or bit-packed codes and a codebook)
  inputs.py       the graph's input: dtype and recorded preprocessing
  splice.py       the exporter's model graph with its weights fed by the regeneration
  tiny.py         build, check against the file's digest, write (and the shared base data)
  exporter.py     torch.onnx's exporter wrapped, and the writers and onnxruntime checks every export shares
"""
