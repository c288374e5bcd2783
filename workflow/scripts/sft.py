from cxrlabel.instruct import PromptSettings
from cxrlabel.labelers.llm import write_llm_settings
from cxrlabel.runlog import logged
from cxrlabel.training.sft import run_sft

with logged(snakemake.log[0]):
    out = snakemake.output[0]
    run_sft(snakemake.input.base, snakemake.input.train, snakemake.input.validate, out, snakemake.params.settings, snakemake.threads)
    write_llm_settings(out, PromptSettings(**snakemake.params.prompt))
