from glob import glob

from setuptools import find_packages, setup

PACKAGE = "visuomotor_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="visuomotor maintainers",
    maintainer_email="maintainers@visuomotor.dev",
    description="rclpy nodes of the visuomotor loop: vision encoder, policy, actuator controller, in-process runner.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "encoder_node = visuomotor_ros.encoder_node:main",
            "policy_node = visuomotor_ros.policy_node:main",
            "controller_node = visuomotor_ros.controller_node:main",
            "sim_robot = visuomotor_ros.sim_robot:main",
            "demo = visuomotor_ros.demo:main",
            "bench-controller = visuomotor_ros.bench_controller:main",
            "bench-image-conversion = visuomotor_ros.bench_image_conversion:main",
        ]
    },
)
