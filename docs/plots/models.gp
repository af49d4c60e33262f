# Cost per token against the number of models: standard decoding, CoS (gammas all 1) and
# mixture sampling of a uniform weighted ensemble of models of equal cost, sampled at T = 1,
# on the cost clock (one unit per pass), from the CSV of cospec-cost-sweep --models
# (docs/benchmarks.md, "Mixture sampling"). CoS depends on how well the models agree; standard
# decoding and mixture sampling do not.
#
# Run from the repository root (gnuplot 5.4 with the pngcairo terminal, e.g. gnuplot-nox):
#   ./build/release/examples/cospec-cost-sweep --models --csv docs/plots/models.csv
#   gnuplot docs/plots/models.gp

if (!exists("csv")) csv = 'docs/plots/models.csv'
if (!exists("png")) png = 'docs/plots/models.png'

set terminal pngcairo size 720,480 font ",11"
set output png
set datafile separator ","
set key top left
set xlabel "models in the ensemble (equal costs, T = 1)"
set ylabel "cost per token (passes of one model)"
set xrange [0.8:4.2]
set yrange [0:4.5]
set xtics 1
set grid ytics

row(name, a) = sprintf("< awk -F, '$3 == \"%s\" && $2 == \"%s\"' %s", name, a, csv)

plot row("standard", "0.50") using 1:5 with linespoints lw 2 pt 7 lc rgb "#444444" title "standard", \
     row("CoS", "0.50") using 1:5 with linespoints lw 2 pt 5 lc rgb "#d9480f" title "CoS, agreement 0.5", \
     row("CoS", "0.80") using 1:5 with linespoints lw 2 pt 9 lc rgb "#e8590c" dt 2 title "CoS, agreement 0.8", \
     row("CoS", "0.95") using 1:5 with linespoints lw 2 pt 11 lc rgb "#f08c00" dt 3 title "CoS, agreement 0.95", \
     row("mixture", "0.50") using 1:5 with linespoints lw 2 pt 13 lc rgb "#1f5fbf" title "mixture sampling (any agreement)"
