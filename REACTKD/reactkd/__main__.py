from reactkd.entry import run

run()
