"""Bundled checkpoints (safetensors files), installed as monkeyanim.checkpoints."""
