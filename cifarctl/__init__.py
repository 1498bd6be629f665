"""cifarctl: a command-line experiment runner for CIFAR-10 and long-tailed CIFAR-10 research.

    $ cifarctl train resnet32 --loss focal --beta 0.999

Importing the package is cheap: torch, torchvision and mlflow are imported only by the
modules that need them, so `cifarctl --help` answers at once.
"""

__version__ = "0.1.0"
