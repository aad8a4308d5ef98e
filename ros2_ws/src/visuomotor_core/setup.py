from setuptools import find_packages, setup

PACKAGE = "visuomotor_core"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="visuomotor maintainers",
    maintainer_email="maintainers@visuomotor.dev",
    description="ROS-free runtime of the visuomotor loop: controller law, limits, robot model, ONNX runtimes, timing.",
    license="Apache-2.0",
    entry_points={"console_scripts": []},
)
