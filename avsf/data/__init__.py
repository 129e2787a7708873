"""The audiovisual data pipeline: decoding (PyAV), log-mel audio, clip sampling, transforms,
dataset formats and a loader that survives bad files. See docs/INTERFACES.md, "Data"."""
