# Helpers shared by the rules: config validation and the tracked params read from dvc.yaml.
from snakemake.utils import validate

from unetflow.engines import check_config, tracked_params_for

validate(config, "../schemas/params.schema.yaml")
check_config(config, "params.yaml")


wildcard_constraints:
    dataset="[a-z0-9_]+",
    model="[a-z0-9_]+",


def tracked(stage):
    """The params DVC tracks for `stage`, with their values, so Snakemake reruns on change."""
    return lambda wildcards: tracked_params_for("dvc.yaml", stage, config, wildcards)
