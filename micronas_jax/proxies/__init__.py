"""Zero-cost proxies: NTK condition number (trainability), linear regions (expressivity); NASWOT (beside them)."""

from micronas_jax.proxies.engine import ProxyConfig, ProxyEngine, seed_keys
from micronas_jax.proxies.ntk import Conditioning, NTKMode, condition_numbers, jacobian

__all__ = ["Conditioning", "NTKMode", "ProxyConfig", "ProxyEngine", "condition_numbers", "jacobian", "seed_keys"]
