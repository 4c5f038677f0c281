"""Pure, jittable functions shared by the models (NHWC maps)."""

from fgjax.ops.bilinear import (
    SQRT_VARIANTS,
    bilinear_features,
    bilinear_pool,
    crop_to_common,
    flatten_bilinear,
    l2_normalize,
    signed_sqrt,
    spp_bilinear_pool,
    spp_cells,
)
