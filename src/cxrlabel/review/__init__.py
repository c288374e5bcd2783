"""Expert preference review: blinded pairs of label outputs, and a local web page that collects judgements."""
