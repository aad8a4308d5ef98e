"""Encoder image preprocessing: the one function both training and the runtime call.

An image arrives as ``uint8`` pixels, shape (H, W, 3), in the colour order named by
its encoding (``rgb8`` or ``bgr8``). :func:`preprocess_into` turns it into the model
input: resized to the configured size with area interpolation, converted to RGB,
scaled to [0, 1], normalized per channel with ``(x - mean) / std`` and laid out
channels-first (3, H, W) as ``float32``. The training code calls the same function on
every rendered image, so what the network sees at train time and at run time cannot
drift apart.

numpy + OpenCV only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

SUPPORTED_COLOUR_ORDERS = ("rgb", "bgr")
_CHANNELS = 3


@dataclass(frozen=True)
class PreprocessConfig:
    """How a camera image becomes the encoder's input tensor.

    Attributes:
        width, height: model input size in pixels (the image is resized to this).
        colour_order: channel order the model expects (``rgb``).
        mean, std: per-channel normalization applied to pixels scaled to [0, 1].
        interpolation: OpenCV resize interpolation name (``area`` or ``linear``).
    """

    width: int = 128
    height: int = 128
    colour_order: str = "rgb"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    interpolation: str = "area"

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"PreprocessConfig: input size must be positive, got "
                             f"{self.width}x{self.height}")
        if self.colour_order not in SUPPORTED_COLOUR_ORDERS:
            raise ValueError(f"PreprocessConfig.colour_order must be one of "
                             f"{SUPPORTED_COLOUR_ORDERS}, got '{self.colour_order}'")
        if len(self.mean) != _CHANNELS or len(self.std) != _CHANNELS:
            raise ValueError("PreprocessConfig: mean and std need 3 values (one per channel)")
        if any(s <= 0.0 for s in self.std):
            raise ValueError(f"PreprocessConfig.std must be > 0, got {self.std}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"PreprocessConfig.interpolation must be one of "
                             f"{sorted(_INTERPOLATIONS)}, got '{self.interpolation}'")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one preprocessed image."""
        return (_CHANNELS, self.height, self.width)

    def to_dict(self) -> dict:
        """JSON-ready form recorded in the model manifest."""
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["channels"] = _CHANNELS
        data["layout"] = "NCHW"
        data["dtype"] = "float32"
        data["scale"] = "pixel / 255"
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        """Inverse of :meth:`to_dict` (descriptive keys are ignored)."""
        keys = ("width", "height", "colour_order", "mean", "std", "interpolation")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"preprocessing entry lacks {missing}")
        return cls(width=int(data["width"]), height=int(data["height"]),
                   colour_order=str(data["colour_order"]),
                   mean=tuple(float(v) for v in data["mean"]),
                   std=tuple(float(v) for v in data["std"]),
                   interpolation=str(data["interpolation"]))


_INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


class Preprocessor:
    """Reusable preprocessing with preallocated buffers (no allocation per frame).

    Args:
        config: the preprocessing recorded in the model manifest.
    """

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        self._size = (config.width, config.height)
        self._interp = _INTERPOLATIONS[config.interpolation]
        # x_norm = pixel * scale + offset, per channel: (pixel/255 - mean) / std.
        std = np.asarray(config.std, np.float32)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._offset = (-np.asarray(config.mean, np.float32) / std).astype(np.float32)
        self._resized = np.empty((config.height, config.width, _CHANNELS), np.uint8)
        self._hwc = np.empty((config.height, config.width, _CHANNELS), np.float32)

    def __call__(self, image: np.ndarray, colour_order: str = "rgb",
                 out: np.ndarray | None = None) -> np.ndarray:
        """Preprocess one image.

        Args:
            image: uint8 array (H, W, 3); may be a strided view.
            colour_order: channel order of ``image`` (``rgb`` or ``bgr``).
            out: optional float32 (3, height, width) destination (e.g. a row of a batch).

        Returns:
            float32 array (3, height, width), the model input for this image.
        """
        _check_image(image)
        if colour_order not in SUPPORTED_COLOUR_ORDERS:
            raise ValueError(f"colour order must be one of {SUPPORTED_COLOUR_ORDERS}, "
                             f"got '{colour_order}'")
        if out is None:
            out = np.empty(self.config.input_shape, np.float32)
        if image.shape[:2] == self._resized.shape[:2]:
            resized = image
        else:
            cv2.resize(image, self._size, dst=self._resized, interpolation=self._interp)
            resized = self._resized
        if colour_order != self.config.colour_order:
            resized = resized[:, :, ::-1]
        np.multiply(resized, self._scale, out=self._hwc, casting="unsafe")
        self._hwc += self._offset
        out[...] = self._hwc.transpose(2, 0, 1)
        return out


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 numpy array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim != 3 or image.shape[2] != _CHANNELS or image.shape[0] == 0 \
            or image.shape[1] == 0:
        raise ValueError(f"image must have shape (H, W, 3) with H, W > 0, got {image.shape}")


def preprocess(image: np.ndarray, config: PreprocessConfig,
               colour_order: str = "rgb") -> np.ndarray:
    """Preprocess one uint8 (H, W, 3) image into a float32 (3, height, width) array."""
    return Preprocessor(config)(image, colour_order)


def preprocess_batch(images: np.ndarray, config: PreprocessConfig,
                     colour_order: str = "rgb") -> np.ndarray:
    """Preprocess uint8 images (N, H, W, 3) into float32 (N, 3, height, width).

    Each image goes through exactly the per-frame path the runtime uses.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape}")
    prep = Preprocessor(config)
    batch = np.empty((images.shape[0], *config.input_shape), np.float32)
    for i in range(images.shape[0]):
        prep(images[i], colour_order, out=batch[i])
    return batch
