"""The write-up's theory problems, computed exactly and checked against PyTorch (SPEC 1.1).

    from cifarctl.theory import conv, relu, regions
    conv.solve(conv.ConvGeometry.parse("3", "3", "4", "2")).matrix.expressions()

`conv` (convolution as a matrix), `network` (exact ReLU networks from YAML), `relu` (the local
linear map at a point), `regions` (every linear piece), `render` (the CLI's rich views).
Nothing here imports torch at import time; the checks import it when they run.
"""
