"""Issue acceptance on real MNIST digits (mnist5k, paper-mnist, the documented default schedule):
float >= 97%, SIQ W4A4 within 0.5 pp of float, and at W2A4 SIQ > k-means >= uniform.
Accuracies come from the integer reference, i.e. what the firmware computes."""
import pytest

from siq.codegen.pipeline import default_schedule
from siq.training.arch import load_arch
from siq.training.integer import build_integer_model, integer_scores
from siq.training.quantizers import QuantizeConfig, quantize_model
from siq.training.train import accuracy, predict_scores, train_float


@pytest.fixture(scope="module")
def trained(mnist5k):
    net, _ = train_float(load_arch("paper-mnist"), mnist5k.train_x, mnist5k.train_y, default_schedule("mnist5k"))
    return net


def _accuracy(net, data, method, wbits, abits=4):
    qm = quantize_model(net, data.train_x, data.train_y,
                        QuantizeConfig(method=method, conv_bits=wbits, act_bits=abits, fc_bits=8), data.class_names)[0]
    return accuracy(integer_scores(build_integer_model(qm), data.test_x), data.test_y)


def test_paper_claims_on_mnist5k(trained, mnist5k):
    float_acc = accuracy(predict_scores(trained, mnist5k.test_x), mnist5k.test_y)
    siq4 = _accuracy(trained, mnist5k, "siq", 4)
    w2 = {m: _accuracy(trained, mnist5k, m, 2) for m in ("uniform", "kmeans", "siq")}
    print(f"float {float_acc:.4f}  SIQ W4A4 {siq4:.4f}  W2A4 {w2}")
    assert float_acc >= 0.97
    assert siq4 >= float_acc - 0.005
    assert w2["siq"] > w2["kmeans"] >= w2["uniform"]
