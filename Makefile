.PHONY: demo test lint bench
demo: ; ./dev demo
test: ; ./dev test
lint: ; ./dev lint
bench: ; ./dev bench
