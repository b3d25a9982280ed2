import pytest

from tests.thirdparty._matrix import check

pytestmark = pytest.mark.thirdparty


@pytest.mark.parametrize("name", ["timm_mobilenetv3_large_100", "timm_mobilenetv3_small_100", "timm_efficientnet_b0",
                                  "timm_seresnet18", "timm_cbam_resnet18", "timm_eca_resnet18", "timm_regnety_002",
                                  "timm_lcnet_050"])
def test_timm_model_exports_correct_int8(name, tmp_path):
    check(name, tmp_path)
