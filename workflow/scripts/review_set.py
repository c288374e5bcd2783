from cxrlabel.review.pairs import write_review_set
from cxrlabel.runlog import logged

with logged(snakemake.log[0]):
    # the pace (prediction_settings), and the answer room stored with the policy
    sampling = {"batch_size": snakemake.config["llm"]["inference"]["batch_size"], "max_new_tokens": None}
    sampling |= {"threads": snakemake.threads, "processes": snakemake.resources.gpu, "log_path": snakemake.log[0]}
    write_review_set(snakemake.input.policy, snakemake.input.reports, snakemake.params.rlhf, sampling, snakemake.output[0])
