"""The small CNN's width and bf16 mixed-precision training (TrainConfig.width, .precision)."""

import pytest
import torch

from core.config import TrainConfig
from core.distributed import DistInfo, LossStep
from core.fit import train_step
from core.losses import L2SoftmaxHead
from core.modelio import build_model, load_model
from core.models import MetricModel, SmallCNN
from core.train import train


def test_width_sets_the_small_cnns_channels_and_is_validated():
    net = SmallCNN(1, 16, width=48)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [48, 96, 192]
    assert net.fc.in_features == 192
    for bad in (0, 7, 300):
        with pytest.raises(ValueError, match="width must be between"):
            TrainConfig(width=bad).validate()
    with pytest.raises(ValueError, match="fp32, bf16"):
        TrainConfig(precision="fp16").validate()


def test_a_bf16_step_trains_in_bfloat16_and_keeps_float32_weights():
    torch.manual_seed(0)
    model = MetricModel(SmallCNN(1, 8, width=8), L2SoftmaxHead(8, 3, alpha=4.0))
    step = LossStep(model, DistInfo(), gather=False)
    seen = []
    model.backbone.features[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 3, (16,))
    before = model.backbone.features[0].weight.detach().clone()
    loss, _ = train_step(step, opt, sched, x, y, 1.0, bf16=True)
    assert seen == [torch.bfloat16]  # the convolution ran in bfloat16 ...
    assert loss.dtype == torch.float32 and torch.isfinite(loss)  # ... the head and its softmax in float32
    weight = model.backbone.features[0].weight
    assert weight.dtype == torch.float32 and not torch.equal(weight.detach(), before)
    seen.clear()
    train_step(step, opt, sched, x, y, 1.0, bf16=False)
    assert seen == [torch.float32]


def test_a_wide_bf16_run_saves_reloads_and_old_configs_default_to_width_32(tmp_path):
    cfg = TrainConfig(
        data="mnist-5k", epochs=3, max_train_samples=600, projection="none", width=16, precision="bf16",
        run_dir=str(tmp_path / "run"),
    )  # fmt: skip
    summary = train(cfg)
    assert summary["test_accuracy"] > 0.35  # 600 digits, 3 epochs: 0.47 in fp32 and bf16; chance 0.1
    model, meta = load_model(tmp_path / "run" / "model.pt")
    assert meta["config"]["width"] == 16 and meta["config"]["precision"] == "bf16"
    assert model.backbone.features[0].out_channels == 16
    old = {**meta, "config": {k: v for k, v in meta["config"].items() if k not in ("width", "precision")}}
    assert build_model(old).backbone.features[0].out_channels == 32
