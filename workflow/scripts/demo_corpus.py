from cxrlabel.io.demo import DemoSpec, write_demo_corpus
from cxrlabel.runlog import logged

with logged(snakemake.log[0]) as log:
    demo = snakemake.params.demo
    spec = DemoSpec(
        n_studies=demo["n_studies"],
        seed=demo["seed"],
        split_fractions=tuple(demo["split_fractions"]),
        silver_noise=demo["silver_noise"],
        p_long=demo["p_long"],
    )
    log.info("demo corpus %s -> %s", spec, write_demo_corpus(demo["out_dir"], spec))
