from glob import glob

from setuptools import find_packages, setup

PACKAGE = "visuomotor_bringup"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "tests"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/rviz", glob("rviz/*.rviz")),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/dds", glob("dds/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="visuomotor maintainers",
    maintainer_email="maintainers@visuomotor.dev",
    description="Launch files, multi-process bringup, RViz configuration, real-time benchmark "
    "and fault injection of the visuomotor loop.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "visuomotor-bringup = visuomotor_bringup.multiprocess:main",
            "bench-realtime = visuomotor_bringup.bench_realtime:main",
            "fault-injection = visuomotor_bringup.fault_injection:main",
        ]
    },
)
