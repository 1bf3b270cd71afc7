"""The curation app: experiments, generations, samples, raters, votes and discriminators."""
