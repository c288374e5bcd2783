from cxrlabel.instruct import PromptSettings
from cxrlabel.labelers.llm import write_llm_settings
from cxrlabel.runlog import logged
from cxrlabel.training.sft import EpochSelection, run_sft

with logged(snakemake.log[0]):
    out, prompt, selecting = snakemake.output[0], PromptSettings(**snakemake.params.prompt), snakemake.params.epoch_selection
    inference = {key: snakemake.params.inference[key] for key in ("batch_size", "max_new_tokens")}
    selection = EpochSelection.on_validate_split(snakemake.input.reports, snakemake.input.labels, prompt, selecting["patience"], **inference) if selecting else None
    run_sft(snakemake.input.base, snakemake.input.train, snakemake.input.validate, out, snakemake.params.settings, snakemake.threads, selection)
    write_llm_settings(out, prompt)
