"""Code of this bundle alone (a network, a transform, a metric no other bundle uses), referenced from
its configs as ``scripts.<module>.<name>``. The template needs none; see docs/adding_a_method.md."""
