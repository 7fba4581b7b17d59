"""T3 configuration: one frozen dataclass that fixes the checkpoint layout and the backbone."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import GPT2Config, LlamaConfig

ENGLISH_TEXT_VOCAB = 704
MULTILINGUAL_TEXT_VOCAB = 2454
GPT2_TEXT_VOCAB = 50276  # GPT-2's 50257 BPE entries + 19 added ones (Turbo, Nano)

# The Llama attention heads whose text-speech alignment the multilingual analyzer reads: (layer, head).
OFFICIAL_ALIGNMENT_HEADS = ((12, 15), (13, 11), (9, 2))


def _llama3_rope() -> dict:
    return dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=8192)


@dataclass(frozen=True)
class T3Config:
    """Everything that decides T3's state-dict layout and numerics.

    The defaults are the official English model ("Llama_520M" backbone). Changing any field other than
    `num_layers` (parity's reduced case) or the tiny preset's sizes breaks compatibility with the
    official checkpoints.

    `backbone="gpt2"` is the Turbo/Nano design (kit 3.6): GPT-2 with its own learned positions (`gpt2_positions`
    rows), no T3 position tables, no perceiver and no emotion token (the conditioning is the speaker projection
    followed by the prompt's speech embeddings as they are), a speech head with a bias, one start-of-speech token
    and text without start/stop markers when decoding.
    """

    text_vocab_size: int = ENGLISH_TEXT_VOCAB
    speech_vocab_size: int = 8194
    start_text_token: int = 255
    stop_text_token: int = 0
    start_speech_token: int = 6561
    stop_speech_token: int = 6562
    max_text_tokens: int = 2048  # position table has 2 more rows
    max_speech_tokens: int = 4096  # position table has 4 more rows
    speech_cond_prompt_len: int = 150
    speaker_embed_size: int = 256
    perceiver_queries: int = 32
    perceiver_heads: int = 4
    perceiver_dropout: float = 0.2  # active in training only, as in the reference
    # Llama backbone
    hidden_size: int = 1024
    num_layers: int = 30
    num_heads: int = 16
    head_dim: int = 64
    intermediate_size: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: dict = field(default_factory=_llama3_rope)
    alignment_heads: tuple = OFFICIAL_ALIGNMENT_HEADS
    backbone: str = "llama"  # or "gpt2"
    gpt2_positions: int = 8196  # GPT-2's learned position table (n_positions); the whole sequence shares it

    @property
    def is_gpt2(self) -> bool:
        return self.backbone == "gpt2"

    @property
    def is_multilingual(self) -> bool:
        return self.text_vocab_size == MULTILINGUAL_TEXT_VOCAB

    @property
    def text_pos_rows(self) -> int:
        return self.max_text_tokens + 2

    @property
    def speech_pos_rows(self) -> int:
        return self.max_speech_tokens + 4

    @property
    def cond_len(self) -> int:
        """Conditioning tokens: speaker (1) + perceiver queries + emotion (1); GPT-2: speaker + the whole prompt."""
        if self.is_gpt2:
            return 1 + self.speech_cond_prompt_len
        return 1 + self.perceiver_queries + 1

    def backbone_config(self) -> LlamaConfig | GPT2Config:
        return self.gpt2_config() if self.is_gpt2 else self.llama_config()

    def gpt2_config(self) -> GPT2Config:
        """GPT-2 as Turbo/Nano build it; its token embedding `wte` (text_vocab_size rows) is never used."""
        return GPT2Config(
            vocab_size=self.text_vocab_size,
            n_positions=self.gpt2_positions,
            n_embd=self.hidden_size,
            n_layer=self.num_layers,
            n_head=self.num_heads,
            n_inner=self.intermediate_size,
            activation_function="gelu_new",
            layer_norm_epsilon=self.rms_norm_eps,
            # The reference's 0.1 dropouts act only in train(), i.e. in LoRA training, where they cost most: attention
            # with dropout cannot use a fused kernel and keeps every score matrix (bench, batch 4 x 10 s on 2 CPU
            # cores, Turbo bf16: 54 s/step and 24 GB with them, 19 s and 9.8 GB without; float32 ran out of 24 GB).
            # Off, as Llama T3 has none: the adapter's own dropout regularises the fine-tune.
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            attn_implementation="sdpa",
            use_cache=True,
            bos_token_id=None, eos_token_id=None,  # GPT-2's 50256: no meaning in T3 (and past a toy vocabulary)
        )

    def llama_config(self) -> LlamaConfig:
        from .attention import ATTENTION_IMPLEMENTATION

        return LlamaConfig(
            vocab_size=8,  # unused: the backbone always receives inputs_embeds
            max_position_embeddings=131072,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
            attention_dropout=0.0,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            rope_scaling=dict(self.rope_scaling),
            tie_word_embeddings=False,
            attn_implementation=ATTENTION_IMPLEMENTATION,
            use_cache=True,
        )

    def replace(self, **changes) -> "T3Config":
        return dataclasses.replace(self, **changes)

    @classmethod
    def english(cls) -> "T3Config":
        return cls()

    @classmethod
    def multilingual(cls) -> "T3Config":
        return cls(text_vocab_size=MULTILINGUAL_TEXT_VOCAB)

    @classmethod
    def turbo(cls) -> "T3Config":
        """Chatterbox Turbo: GPT-2 medium (24 layers, 1024 wide), 375 prompt tokens."""
        return cls(text_vocab_size=GPT2_TEXT_VOCAB, speech_vocab_size=6563, speech_cond_prompt_len=375,
                   backbone="gpt2", hidden_size=1024, num_layers=24, num_heads=16, head_dim=64,
                   intermediate_size=4096, rope_scaling={}, alignment_heads=())

    @classmethod
    def nano(cls) -> "T3Config":
        """Chatterbox Nano: GPT-2 small (12 layers, 768 wide), otherwise Turbo."""
        return cls.turbo().replace(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)

    @classmethod
    def tiny_turbo(cls, text_vocab_size: int) -> "T3Config":
        """Turbo's design at toy size (~1M parameters plus the text tables of the synthetic BPE vocabulary)."""
        return cls.turbo().replace(text_vocab_size=text_vocab_size, hidden_size=64, num_layers=2, num_heads=4,
                                   head_dim=16, intermediate_size=256, gpt2_positions=2048)

    @classmethod
    def tiny(cls, multilingual: bool = False) -> "T3Config":
        """Same architecture and vocabularies, ~3M parameters. With synthetic weights it speaks no words."""
        return cls(
            text_vocab_size=MULTILINGUAL_TEXT_VOCAB if multilingual else ENGLISH_TEXT_VOCAB,
            max_text_tokens=512,
            max_speech_tokens=1024,
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            head_dim=16,
            intermediate_size=128,
            alignment_heads=((1, 3), (1, 1), (0, 2)),
        )
