"""Network builders. Depth sets live here, free of torch, so data workers that only
validate hyperparameters never pay for importing torch."""

IMAGENET_DEPTHS = (18, 34, 50, 101, 152, 200)
CIFAR_DEPTHS = (20, 32, 44, 56, 110)
BASE_NETWORKS = ("vgg-16", "resnet-50")  # SSD bases (models/ssd.py)
