"""Server side of siq: data, networks, float training, weight quantizers, integer reference."""
