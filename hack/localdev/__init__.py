"""Local development tooling: a real control plane on loopback, a kubelet stand-in, a Hub emulator.

Not shipped in the image; tests, `make demo` and `bench/` import it from `hack/`.
"""
