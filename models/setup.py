from glob import glob

from setuptools import find_packages, setup

PACKAGE = "visuomotor_models"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/artifacts", glob("artifacts/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="visuomotor maintainers",
    maintainer_email="maintainers@visuomotor.dev",
    description="Training, evaluation and ONNX export of the visuomotor encoder and policy (torch, train time only).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "train-encoder = visuomotor_models.train_encoder:main",
            "bench-encoder = visuomotor_models.bench_encoder:main",
            "train-policy = visuomotor_models.train_policy:main",
            "evaluate-policy = visuomotor_models.evaluate_policy:main",
            "experiment = visuomotor_models.experiment.cli:main",
            "experiment-bench = visuomotor_models.experiment.bench:main",
        ]
    },
)
