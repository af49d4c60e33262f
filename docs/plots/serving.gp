# Total tokens per second against the number of concurrent requests S, for standard decoding,
# SD, CoS, adaptive, mixture sampling (at temperature 1) and the automatic choice, greedy and at
# temperature 1, from the CSV of cospec-bench-serving
# (docs/benchmarks.md, "Serving many requests"): where speculation pays and where batching
# alone takes over.
#
# Run from the repository root (gnuplot 5.4 with the pngcairo terminal, e.g. gnuplot-nox):
#   ./build/release/bench/cospec-bench-serving --benchmark_filter='serving/S:(1|4|16)/' --benchmark_repetitions=3 \
#       --benchmark_report_aggregates_only=true --benchmark_out=serving-run.csv --benchmark_out_format=csv
#   grep -E '^name|median' serving-run.csv > docs/plots/serving.csv
#   gnuplot docs/plots/serving.gp
# Other paths: gnuplot -e "csv='serving.csv'; png='serving.png'" docs/plots/serving.gp

if (!exists("csv")) csv = 'docs/plots/serving.csv'
if (!exists("png")) png = 'docs/plots/serving.png'

set datafile separator ","
set datafile columnheaders
array methods[6] = ["standard", "SD", "CoS", "adaptive", "mixture", "auto"]
array labels[6] = ["standard", "SD g=1", "CoS g=1", "adaptive", "mixture (T = 1)", "auto"]
array colors[6] = [0x555555, 0xd9480f, 0x1f5fbf, 0x2b8a3e, 0x9c36b5, 0x000000]
array points[6] = [7, 5, 9, 13, 11, 3]
array modes[2] = ["greedy", "temperature 1"]

# The S and the temperature of a row, from its name "serving/S:4/T:0/...".
requests(name) = real(substr(name, strstrt(name, "S:") + 2, strstrt(name, "/T:") - 1))
mode(name) = real(substr(name, strstrt(name, "T:") + 2, strstrt(name, "T:") + 2))

set terminal pngcairo size 1200,480 font "DejaVu Sans,10"
set output png
set multiplot layout 1,2 title "Total tokens/s of S concurrent requests, 200M transformer + early-exit draft, 2 cores (medians of 3)" font ",12"
set grid lc rgb "#dddddd"
set logscale x 2
set xrange [0.8:20]
set xtics (1, 4, 16)
set xlabel "concurrent requests S"
set ylabel "total tokens/s"
set key top left box opaque
do for [t = 0:1] {
  set title modes[t + 1]
  plot for [m = 1:6] csv using (mode(strcol(1)) == t ? requests(strcol(1)) : NaN):(column("tps_" . methods[m])) \
       with linespoints lc rgb colors[m] pt points[m] ps 1.2 lw 1.6 title labels[m]
}
unset multiplot
