from glob import glob

from setuptools import find_packages, setup

PACKAGE = "visuomotor_sim"

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
    description="Headless PyBullet stand-in for the robot: world, camera, domain randomization, reach task, Gymnasium env, the hardware backend of the sim robot process.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "bench-sim = visuomotor_sim.bench:main",
        ]
    },
)
