"""`mymodel`: the write-up's own CNN (SPEC 1.2), 2,975,878 parameters; 0.8470 validation
accuracy on balanced CIFAR-10 in the write-up (batch 96, lr 0.01, 20 epochs).

    model = create_model("MyModel")

The layer list is SPEC 1.2's text read literally, each conv with a bias: conv 7x7/p2 (32 -> 30),
maxpool (15), conv 5x5/p1 (13), conv 5x5/p2 (13), maxpool (6), conv 5x5/p2 (6),
conv 3x3/p0 (4), so the flatten is 196 * 4 * 4 = 3136, as the text says. Parameters per layer:
14,208 + 230,496 + 307,328 + 524,964 + 289,492 (convs) + 1,568,500 + 40,080 + 810 (linears)
= 2,975,878, the published count; no other reading is needed.
"""

from collections import OrderedDict

from torch import nn

from cifarctl.errors import UsageError
from cifarctl.models import register_model


@register_model
def mymodel(num_classes: int = 10, dropout: float = 0.25) -> nn.Sequential:
    """The write-up's design; `dropout` is its rate at both dropout sites (0.25 there)."""
    if not 0 <= dropout < 1:
        raise UsageError(f"model option dropout must be in [0, 1), got {dropout!r}")
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 96, kernel_size=7, padding=2),     # (N, 96, 30, 30)
        relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(2),                                # (N, 96, 15, 15)
        conv2=nn.Conv2d(96, 96, kernel_size=5, padding=1),    # (N, 96, 13, 13)
        relu2=nn.ReLU(),
        conv3=nn.Conv2d(96, 128, kernel_size=5, padding=2),   # (N, 128, 13, 13), "same"
        relu3=nn.ReLU(),
        pool2=nn.MaxPool2d(2),                                # (N, 128, 6, 6)
        conv4=nn.Conv2d(128, 164, kernel_size=5, padding=2),  # (N, 164, 6, 6)
        relu4=nn.ReLU(),
        conv5=nn.Conv2d(164, 196, kernel_size=3),             # (N, 196, 4, 4)
        relu5=nn.ReLU(),
        drop1=nn.Dropout(dropout),
        flatten=nn.Flatten(),                                 # (N, 3136)
        fc1=nn.Linear(196 * 4 * 4, 500),
        relu6=nn.ReLU(),
        drop2=nn.Dropout(dropout),
        fc2=nn.Linear(500, 80),
        relu7=nn.ReLU(),
        classifier=nn.Linear(80, num_classes),
    ))
