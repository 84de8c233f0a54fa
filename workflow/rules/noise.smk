# The annotation-noise study (docs/noise.md): models trained on the corrupt stage's noisy
# copies (noise_runs), the fixed-split models scored against noisy test masks (noise_scores),
# and the report per dataset (noise).


rule noise_runs:
    input:
        script="scripts/noise_runs.py",
        code=code("noise_runs"),
        processed="data/noisy/{dataset}/{family}/level{level}/seed{seed}",
        augmented="data/noisy_augmented/{dataset}/{family}/level{level}/seed{seed}",
    output:
        run=directory(
            "results/{dataset}/{model}/noise/{family}/level{level}/seed{seed}"
        ),
        scores="results/noise/{dataset}/trained/{model}/{family}/level{level}/seed{seed}.csv",
    log:
        "logs/{dataset}/{model}/noise/{family}-level{level}-seed{seed}.log",
    benchmark:
        "benchmarks/{dataset}/{model}/noise/{family}-level{level}-seed{seed}.tsv"
    conda:
        "../envs/unetflow.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        preset=config["preset"],
        work="results/{dataset}/{model}/noise/work-{family}-level{level}-seed{seed}",
        tracked=tracked("noise_runs"),
    shell:
        "python {input.script} --params params.yaml --preset {params.preset} "
        "--dataset {wildcards.dataset} --model {wildcards.model} --seed {wildcards.seed} "
        "--processed {input.processed} --augmented {input.augmented} --out {output.run} "
        "--scores {output.scores} --work {params.work} > {log} 2>&1"


rule noise_scores:
    input:
        script="scripts/noise_scores.py",
        code=code("noise_scores"),
        processed="data/processed/{dataset}",
        predictions="results/{dataset}/{model}/predictions",
    output:
        scores="results/noise/{dataset}/tested/{model}.csv",
    log:
        "logs/{dataset}/{model}/noise/tested.log",
    benchmark:
        "benchmarks/{dataset}/{model}/noise/tested.tsv"
    conda:
        "../envs/unetflow.yaml"
    params:
        preset=config["preset"],
        families=" ".join(config["noise_families"]),
        levels=" ".join(str(level) for level in config["noise_levels"]),
        tracked=tracked("noise_scores"),
    shell:
        "python {input.script} --params params.yaml --preset {params.preset} "
        "--dataset {wildcards.dataset} --processed {input.processed} "
        "--predictions {input.predictions} --out {output.scores} "
        "--noise_families {params.families} --noise_levels {params.levels} > {log} 2>&1"


rule noise:
    input:
        script="scripts/noise.py",
        code=code("noise"),
        noisy=noise_inputs("data/noisy/{dataset}/{family}/level{level}/seed{seed}"),
        trained=noise_inputs(
            "results/noise/{dataset}/trained/{model}/{family}/level{level}/seed{seed}.csv"
        ),
        tested=noise_inputs("results/noise/{dataset}/tested/{model}.csv"),
        scores=noise_inputs("results/scores/{dataset}/{model}.csv"),
    output:
        json="results/noise/{dataset}.json",
        md="results/noise/{dataset}.md",
        figure=report(
            "results/noise/{dataset}.png",
            caption="../report/noise.rst",
            category="Annotation noise",
            labels={"dataset": "{dataset}"},
        ),
    log:
        "logs/{dataset}/noise.log",
    benchmark:
        "benchmarks/{dataset}/noise.tsv"
    conda:
        "../envs/unetflow.yaml"
    params:
        preset=config["preset"],
        noisy="data/noisy/{dataset}",
        results="results/noise/{dataset}",
        scores="results/scores/{dataset}",
        models=" ".join(config["models"]),
        families=" ".join(config["noise_families"]),
        levels=" ".join(str(level) for level in config["noise_levels"]),
        seeds=" ".join(str(seed) for seed in config["noise_seeds"]),
        tracked=tracked("noise"),
    shell:
        "python {input.script} --params params.yaml --preset {params.preset} "
        "--dataset {wildcards.dataset} --noisy {params.noisy} --results {params.results} "
        "--scores {params.scores} --json {output.json} --md {output.md} "
        "--figure {output.figure} --models {params.models} "
        "--noise_families {params.families} --noise_levels {params.levels} "
        "--noise_seeds {params.seeds} > {log} 2>&1"
