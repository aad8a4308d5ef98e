"""Launch files, multi-process bringup, parameter files, RViz configuration and robot description
of the visuomotor loop."""
