"""Typed detection result."""

from __future__ import annotations

from dataclasses import dataclass

Point = tuple[float, float]


@dataclass(frozen=True)
class Face:
    """One detected face, in original-image pixel coordinates.

    ``box`` is ``(x1, y1, x2, y2)``; ``landmarks`` are five ``(x, y)`` points in the order
    left eye, right eye, nose, left mouth corner, right mouth corner (left/right as seen in
    the image).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[Point, Point, Point, Point, Point]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def to_dict(self) -> dict:
        """JSON-ready form: ``{"box": [...], "score": s, "landmarks": [[x, y], ...]}``."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 5),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }
