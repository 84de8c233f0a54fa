# Data stages: download (or generate) -> preprocess -> augment, one job per dataset.


rule download:
    input:
        script="scripts/download.py",
        code=code("download"),
        manifest="data/manifests/{dataset}.tsv",
    output:
        raw=directory("data/raw/{dataset}"),
    log:
        "logs/{dataset}/download.log",
    benchmark:
        "benchmarks/{dataset}/download.tsv"
    conda:
        "../envs/unetflow.yaml"
    params:
        tracked=tracked("download"),
    shell:
        "python {input.script} --params params.yaml --dataset {wildcards.dataset} "
        "--manifest {input.manifest} --out {output.raw} > {log} 2>&1"


rule preprocess:
    input:
        script="scripts/preprocess.py",
        code=code("preprocess"),
        raw="data/raw/{dataset}",
    output:
        processed=directory("data/processed/{dataset}"),
    log:
        "logs/{dataset}/preprocess.log",
    benchmark:
        "benchmarks/{dataset}/preprocess.tsv"
    conda:
        "../envs/unetflow.yaml"
    params:
        preset=config["preset"],
        tracked=tracked("preprocess"),
    shell:
        "python {input.script} --params params.yaml --preset {params.preset} "
        "--dataset {wildcards.dataset} --raw {input.raw} --out {output.processed} > {log} 2>&1"


rule augment:
    input:
        script="scripts/augment.py",
        code=code("augment"),
        processed="data/processed/{dataset}",
    output:
        augmented=directory("data/augmented/{dataset}"),
    log:
        "logs/{dataset}/augment.log",
    benchmark:
        "benchmarks/{dataset}/augment.tsv"
    conda:
        "../envs/unetflow.yaml"
    params:
        preset=config["preset"],
        tracked=tracked("augment"),
    shell:
        "python {input.script} --params params.yaml --preset {params.preset} "
        "--dataset {wildcards.dataset} --processed {input.processed} "
        "--out {output.augmented} > {log} 2>&1"


# The annotation-noise study's noisy copy of a processed dataset (noise.smk runs the rest).
rule corrupt:
    input:
        script="scripts/corrupt.py",
        code=code("corrupt"),
        processed="data/processed/{dataset}",
    output:
        noisy=directory("data/noisy/{dataset}/{family}/level{level}/seed{seed}"),
        augmented=directory(
            "data/noisy_augmented/{dataset}/{family}/level{level}/seed{seed}"
        ),
    log:
        "logs/{dataset}/corrupt/{family}-level{level}-seed{seed}.log",
    benchmark:
        "benchmarks/{dataset}/corrupt/{family}-level{level}-seed{seed}.tsv"
    conda:
        "../envs/unetflow.yaml"
    params:
        preset=config["preset"],
        tracked=tracked("corrupt"),
    shell:
        "python {input.script} --params params.yaml --preset {params.preset} "
        "--dataset {wildcards.dataset} --family {wildcards.family} "
        "--level {wildcards.level} --seed {wildcards.seed} --processed {input.processed} "
        "--out {output.noisy} --augmented {output.augmented} > {log} 2>&1"
