"""mtcnnkit: train, evaluate, compress and deploy the MTCNN face detector."""

from .detect.detector import Detector
from .detect.face import Face
from .weights import load_weights

__all__ = ["Detector", "Face", "load_weights"]
__version__ = "0.1.0"
