"""MoE inference engine: Hugging Face MoE checkpoints (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE) on torch.

    from moe_engine import load_model
    model = load_model(path, device="cpu", dtype=torch.float32)  # compile=True: compiled CPU decode
    out = model.generate([[1, 2, 3]], max_new_tokens=32)
"""
from .config import CheckpointError, ModelArgs
from .cost import Prices, Usage
from .generate import ClassifyOutput, GenerateOutput
from .loader import build_model, load_model, read_config, save_checkpoint, state_dict_hf
from .model import Transformer

__all__ = [
    "CheckpointError", "ClassifyOutput", "GenerateOutput", "ModelArgs", "Prices", "Transformer", "Usage",
    "build_model", "load_model", "read_config", "save_checkpoint", "state_dict_hf",
]
