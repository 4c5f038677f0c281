"""Pure, jittable functions shared by the models (NHWC maps).

Every public op takes array-likes (NumPy arrays, nested lists, scalars, jax arrays or tracers):
array arguments are converted with `jnp.asarray` at the boundary, so calling an op on NumPy data
outside of jit gives the same result as on jax arrays (NumPy float64 becomes float32 unless jax's
x64 mode is on). Static arguments (sizes, windows, levels, variants) stay Python values.
"""

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
