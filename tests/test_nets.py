from __future__ import annotations

import pytest
import torch

from tilecolor.core.errors import ConfigError
from tilecolor.model.nets import GeneratorSpec, PatchDiscriminator, UNetGenerator, count_parameters


def test_generator_shapes_and_range():
    g = UNetGenerator(GeneratorSpec(width=8, depth=5, max_width=32)).eval()
    y = g(torch.rand(3, 1, 64, 96) * 2 - 1)
    assert y.shape == (3, 2, 64, 96)
    assert y.abs().max() <= 1


def test_paper_widths_and_size():
    spec = GeneratorSpec()
    assert spec.widths == [64, 128, 256, 512, 512, 512, 512, 512]
    assert count_parameters(UNetGenerator(spec)) == pytest.approx(54.4e6, rel=0.01)


def test_input_must_be_multiple_of_depth():
    g = UNetGenerator(GeneratorSpec(width=4, depth=4, max_width=8))
    with pytest.raises(ValueError, match="multiples of 16"):
        g(torch.zeros(1, 1, 24, 32))


def test_bad_spec_names_value():
    with pytest.raises(ConfigError, match="depth=1"):
        GeneratorSpec(depth=1)


def test_eval_mode_output_does_not_depend_on_batch_mates():
    """Running statistics + no dropout: a tile's output is the same alone or in a batch."""
    torch.manual_seed(0)
    g = UNetGenerator(GeneratorSpec(width=4, depth=4, max_width=16, dropout=0.5))
    g.train()
    g(torch.rand(4, 1, 32, 32))  # move the running stats away from their init
    g.eval()
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        together = g(x)
        alone = torch.cat([g(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_skip_connections_carry_fine_detail():
    """Changing one input pixel changes the output near it (the skip path), not only via
    the bottleneck."""
    torch.manual_seed(0)
    g = UNetGenerator(GeneratorSpec(width=4, depth=4, max_width=16)).eval()
    x = (torch.rand(1, 1, 32, 32) * 2 - 1).requires_grad_()
    g(x)[0, 0, 10, 10].backward()
    near = x.grad[0, 0, 8:13, 8:13].abs()
    assert near.max() > 0
    # the outermost skip level gives a sharper dependence near the pixel than far from it
    assert near.mean() > x.grad[0, 0, 20:, 20:].abs().mean()


def test_patchgan_receptive_field_is_70():
    d = PatchDiscriminator()
    for m in d.modules():  # make the field visible in the gradient: positive weights
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.constant_(m.weight, 0.01)
    d.eval()
    lightness = torch.zeros(1, 1, 256, 256, requires_grad=True)
    out = d(lightness, torch.zeros(1, 2, 256, 256))
    assert out.shape == (1, 1, 30, 30)
    out[0, 0, 15, 15].backward()
    rows = (lightness.grad[0, 0].abs().sum(1) > 0).nonzero()
    assert int(rows.max() - rows.min() + 1) == 70


def test_for_inference_is_the_same_function():
    """BN folded into the convolutions + channels_last: same outputs as the eval model,
    with running statistics far from the identity so a wrong fold would show."""
    from torch import nn

    from tilecolor.model.nets import for_inference

    torch.manual_seed(0)
    g = UNetGenerator(GeneratorSpec(width=8, depth=5, max_width=32))
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    g.eval()
    fast = for_inference(g)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in g.modules())  # original untouched
    x = torch.rand(3, 1, 64, 96) * 2 - 1
    with torch.inference_mode():
        want = g(x)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)
    assert (want - g(torch.zeros_like(x))).abs().max() > 0.01  # the input matters


def test_driver_checks_a_checkpoint_without_importing_torch(tiny_checkpoint):
    """`tilecolor run`'s driver does the torch-free checks only (the workers load the
    model): importing the pipeline and describing the checkpoint must not import torch,
    which costs the driver seconds of start-up."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import tilecolor.batch.plan, tilecolor.batch.run, tilecolor.cli\n"
            "import tilecolor.cluster.client, tilecolor.engine.graph\n"
            "from tilecolor.model.predict import make_predictor\n"
            f"p = make_predictor({str(tiny_checkpoint)!r}, validate=False)\n"
            "assert p.multiple > 1 and len(p.digest) == 64\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


def test_hint_residual_output_is_the_hint_plus_the_correction():
    torch.manual_seed(0)
    plain = UNetGenerator(GeneratorSpec(width=4, depth=3, max_width=8, in_channels=4)).eval()
    resid = UNetGenerator(GeneratorSpec(width=4, depth=3, max_width=8, in_channels=4,
                                        hint_residual=True)).eval()
    resid.load_state_dict(plain.state_dict())
    x = torch.rand(2, 4, 16, 16) * 2 - 1
    x[:, 3] = torch.tensor([1.0, 0.0])[:, None, None]  # image 0 hinted, image 1 not
    x[1, 1:3] = 0
    with torch.no_grad():
        want = plain(x)
        want[0] = (want[0] + x[0, 1:3]).clamp(-1, 1)
        torch.testing.assert_close(resid(x), want)
    with pytest.raises(ConfigError, match="hint_residual needs"):
        GeneratorSpec(in_channels=1, hint_residual=True)
