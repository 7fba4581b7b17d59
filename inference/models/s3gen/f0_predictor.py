"""Frame-level pitch (F0, Hz) estimated from the mel spectrogram; it drives the vocoder's sine source."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


@dataclass(frozen=True)
class F0PredictorConfig:
    in_channels: int = 80
    hidden_channels: int = 512
    num_layers: int = 5
    kernel_size: int = 3


class F0Predictor(nn.Module):
    """Stack of weight-normed "same" convolutions with ELU, then a per-frame linear read-out.

    The output is made non-negative with abs() rather than a ReLU so that no frame gets a dead gradient.
    """

    def __init__(self, cfg: F0PredictorConfig = F0PredictorConfig()):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        for i in range(cfg.num_layers):
            c_in = cfg.in_channels if i == 0 else cfg.hidden_channels
            conv = nn.Conv1d(c_in, cfg.hidden_channels, cfg.kernel_size, padding=cfg.kernel_size // 2)
            # Checkpoint keys are condnet.{0,2,4,...}: the ELUs occupy the odd slots.
            layers += [weight_norm(conv), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cfg.hidden_channels, 1)

    def forward(self, mel: Tensor) -> Tensor:
        """(B, in_channels, T) -> (B, T) F0 in Hz."""
        hidden = self.condnet(mel).transpose(1, 2)  # (B, T, hidden)
        return self.classifier(hidden).squeeze(-1).abs()
