"""Launch files, multi-process bringup, RViz configuration, real-time benchmark and fault
injection of the visuomotor loop (the nodes and their parameter files are visuomotor_ros's,
the robot descriptions visuomotor_description's)."""
