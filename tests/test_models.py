"""Every registered model: shapes, gradients, and the parameter counts Keras prints."""

from __future__ import annotations

import pytest
import torch

from mnistkit.errors import MnistkitError
from mnistkit.models import MODELS, count_parameters, create_model
from mnistkit.report.summary import summary

# Keras's figures for the seeds' architectures (model.summary() totals; seed 004 printed its
# convolutions' 640, 73,856 and 295,168 itself).
KERAS_PARAMS = {
    "dense512": 407_050,  # 784*512+512 + 512*10+10
    "mlp-l1": 104_938,  # 100,480 + 4,128 + 330
    "lenet": 109_994,  # 60 + 880 + 17,400 + 90,804 + 850
    "convnet": 104_202,  # Deep Learning with Python 2nd ed. prints "Total params: 104,202"
    "deep-convnet": 675_370,  # 640 + 73,856 + 295,168 + 295,040 + 8,256 + 2,080 + 330
}


def conv_bn_params(c_in: int, c_out: int, k: int = 3) -> int:
    return k * k * c_in * c_out + 2 * c_out  # bias-free kernel + batch norm's scale and shift


# Our own models at their defaults (the fast and best recipes' nets), counted by hand from
# their layer lists: fast-cnn's 5x5 stride-2 stem and two blocks; best-cnn's two members, each
# with three blocks, three same-size convolutions (depth 2) and its Linear.
OUR_PARAMS = {
    "fast-cnn": conv_bn_params(1, 8, k=5) + conv_bn_params(8, 16) + conv_bn_params(16, 32)
    + 288 * 10 + 10,
    "best-cnn": 2 * (sum(conv_bn_params(a, b) for a, b in ((1, 32), (32, 64), (64, 128)))
                     + sum(conv_bn_params(c, c) for c in (32, 64, 128)) + 1152 * 10 + 10),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.rand(3, 1, 28, 28)
    logits = model(x)  # training mode: a committee stacks its members' logits
    assert logits.shape == (3 * model.members, 10) and logits.dtype == torch.float32
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_count_equals_keras(name):
    expected = {**KERAS_PARAMS, **OUR_PARAMS}
    assert name in expected, f"record the parameter count of the new model {name}"
    assert count_parameters(create_model(name)) == expected[name]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_keras_initialisation(name):
    """Glorot-uniform kernels (|w| <= sqrt(6 / (fan_in + fan_out))) and zero biases."""
    model = create_model(name)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear | torch.nn.Conv2d):
            fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(mod.weight)
            assert mod.weight.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5
            if mod.bias is not None:  # batch-normed convolutions have none
                assert torch.count_nonzero(mod.bias) == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_eval_is_deterministic_and_summary_totals(name):
    model = create_model(name).eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(model(x), model(x))
    text = summary(model)
    assert f"Total params: {count_parameters(model):,}" in text
    assert model.training is False  # summary leaves the mode as it found it


def test_summary_shows_seed004_figures():
    text = summary(create_model("deep-convnet"))
    for figure in ("640", "73,856", "295,168", "(None, 256, 3, 3)", "(None, 2304)"):
        assert figure in text


def test_mlp_l1_sees_unscaled_pixels_and_penalises_hidden_kernels():
    model = create_model("mlp-l1").eval()
    assert model.l1_weights == ["2.weight", "5.weight"]
    x = torch.rand(1, 1, 28, 28)
    first = model[2](model[1](model[0](x)))
    torch.testing.assert_close(first, model[2](255 * x.flatten(1)))


def test_unknown_model_lists_valid_names():
    with pytest.raises(MnistkitError) as e:
        create_model("resnet9000")
    assert all(name in str(e.value) for name in MODELS)
    with pytest.raises(MnistkitError, match="arguments"):
        create_model("dense512", width=3)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_channels_last_same_output(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.rand(4, 1, 28, 28)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(
        model(x.contiguous(memory_format=torch.channels_last)), ref, rtol=1e-4, atol=1e-5
    )


def test_members_train_alone_and_answer_together():
    """``best-cnn`` with members: in training each member's logits come out stacked, in eval
    their mean (each with its TTA); the members start from different weights."""
    torch.manual_seed(0)
    model = create_model("best-cnn", widths=(4, 8, 8), members=3, dropout=0.0)
    single = create_model("best-cnn", widths=(4, 8, 8), members=1, dropout=0.0)
    assert count_parameters(model) == 3 * count_parameters(single)
    assert (model.members, single.members, create_model("dense512").members) == (3, 1, 1)
    members = list(model[0])
    assert not torch.equal(members[0][0].weight, members[1][0].weight)
    x = torch.rand(5, 1, 28, 28)
    trained = model.train()(x)
    assert trained.shape == (15, 10)
    alone = []
    for k, member in enumerate(members):  # each member as a net of its own, same weights
        net = create_model("best-cnn", widths=(4, 8, 8), members=1, dropout=0.0)
        net.load_state_dict(
            {
                name: v
                for name, v in zip(net.state_dict(), member.state_dict().values(), strict=True)
            }
        )
        alone.append(net.eval()(x))  # before its own training pass moves the BN statistics
        torch.testing.assert_close(trained[5 * k : 5 * k + 5], net.train()(x))
    torch.testing.assert_close(model.eval()(x), torch.stack(alone).mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(MnistkitError, match="member"):
        create_model("best-cnn", members=0)


def test_strided_stem_replaces_the_first_pool():
    """``stem="stride"``: a stride-2 convolution takes 28x28 to 14x14 in place of the full-size
    convolution and max pool; the rest of the net and its parameter count stay the same."""
    pooled = create_model("fast-cnn", stem="pool", stem_kernel=3)
    strided = create_model("fast-cnn", stem="stride", stem_kernel=3)
    assert count_parameters(strided) == count_parameters(pooled)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in list(strided)[:3])
    assert strided[0](torch.rand(2, 1, 28, 28)).shape == (2, 8, 14, 14)
    assert strided.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(MnistkitError, match="stem"):
        create_model("fast-cnn", stem="patch")


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 7])
def test_a_strided_stem_of_any_kernel_halves_the_image(k):
    """The stem's kernel sets how much each output sees; every size gives 14x14 maps."""
    net = create_model("fast-cnn", stem_kernel=k)
    assert net[0].kernel_size == (k, k)
    assert net[0](torch.rand(2, 1, 28, 28)).shape == (2, 8, 14, 14)
    assert net.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_a_4x4_strided_stem_sees_the_window_of_conv_and_pool():
    """Output (i, j) of the 4x4 stride-2 stem depends on input rows and columns 2i-1 .. 2i+2,
    the window a 3x3 convolution followed by a 2x2 max pool covers: changing a pixel outside
    it leaves the output alone, inside it changes it."""
    stem = create_model("fast-cnn", stem="stride", stem_kernel=4)[0]
    torch.nn.init.constant_(stem.weight, 1.0)
    x = torch.zeros(1, 1, 28, 28)
    base = stem(x)[0, 0]
    for (r, c), inside in [((9, 9), True), ((12, 12), True), ((8, 10), False), ((13, 10), False)]:
        poked = x.clone()
        poked[0, 0, r, c] = 1.0
        changed = stem(poked)[0, 0, 5, 5] != base[5, 5]  # output (5, 5): rows/cols 9 .. 12
        assert bool(changed) == inside, (r, c)


def test_depth_adds_same_size_convolutions_after_each_block():
    """``depth=2``: each block is followed by one more 3x3 conv-BN-ReLU at its output size;
    the output shape stays (N, 10) and the count of convolutions goes from 3 to 6."""
    shallow = create_model("best-cnn", widths=(4, 8, 8), members=1, depth=1)
    deep = create_model("best-cnn", widths=(4, 8, 8), members=1, depth=2)

    def convs(net):
        return [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]

    assert len(convs(shallow)) == 3 and len(convs(deep)) == 6
    assert [c.in_channels for c in convs(deep)] == [1, 4, 4, 8, 8, 8]
    assert count_parameters(deep) - count_parameters(shallow) == sum(
        c * c * 9 + 2 * c for c in (4, 8, 8)
    )
    assert deep.eval()(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(MnistkitError, match="depth"):
        create_model("best-cnn", depth=0)
    with pytest.raises(MnistkitError, match="kernel"):
        create_model("fast-cnn", stem="stride", stem_kernel=9)
