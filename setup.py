"""Build hook for the optional C speedups; all other metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ioswarm._speedups",
            sources=["ioswarm/_speedups.c"],
            extra_compile_args=["-O3"],
            # Without a C compiler the install still succeeds and the pure-Python twins run.
            optional=True,
        )
    ]
)
