"""digitrec: tiny meter-digit CNNs for the ESP32, from dataset to measured device."""

__version__ = "0.2.0"
