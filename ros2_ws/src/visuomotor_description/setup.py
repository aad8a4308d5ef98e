from glob import glob

from setuptools import setup

PACKAGE = "visuomotor_description"

# Data only: the robots' URDFs and description files, installed to
# share/visuomotor_description/urdf, where visuomotor_core.robot_description finds them.
setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[],
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/urdf", glob("urdf/*.urdf") + glob("urdf/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="visuomotor maintainers",
    maintainer_email="maintainers@visuomotor.dev",
    description="Robot descriptions of the visuomotor loop: URDFs and the description file "
    "beside each (joints, frames, grasp link, home, default gains, limits).",
    license="Apache-2.0",
)
