"""The write-up's theory problems, computed exactly and checked against PyTorch (SPEC 1.1).

    from cifarctl.theory import conv, relu, regions
    conv.solve(conv.ConvGeometry.parse("3", "3", "4", "2")).matrix.expressions()

- `conv`: convolution (cross-correlation) as a matrix y = A x, and its transpose.
- `network`: fully connected ReLU networks with exact rational weights, from YAML.
- `relu`: the local linear map h = W x + b of such a network at a point.
- `regions`: all linear pieces of a scalar-input network over a range.
- `render`: the rich views the CLI prints.

Nothing here imports torch at import time; the checks import it when they run.
"""
